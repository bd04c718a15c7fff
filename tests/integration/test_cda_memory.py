"""A 19 MiB CDA of 5 million empty elements must not blow the gateway's memory (issue 10, break 3).

Measured in child processes (peak RSS is per process, and the test runner's own
memory must not count): the pure pipeline alone, then ``relais serve`` receiving ten
such documents at once over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest

from tests.acceptance.test_crash import free_port

ROOT = Path(__file__).resolve().parents[2]
ELEMENTS = 5_000_000


def bomb() -> bytes:
    return b'<ClinicalDocument xmlns="urn:hl7-org:v3">' + b"<a/>" * ELEMENTS + b"</ClinicalDocument>"


_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    from datetime import UTC, datetime
    from gateway.core.pipeline import Ids, PipelineOptions, analyse_cda

    def rss_mib():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096 / 2**20

    data = b'<ClinicalDocument xmlns="urn:hl7-org:v3">' + b"<a/>" * int(sys.argv[1]) + b"</ClinicalDocument>"
    before = rss_mib()
    an = analyse_cda(data, {"DESTDMP": True}, PipelineOptions(), Ids(datetime.now(UTC), lambda: "0" * 32))
    codes = [f.code for f in an.errors]
    del an, data
    print(json.dumps({"codes": codes, "before": before, "after": rss_mib(),
                      "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """
)


def test_19mib_cda_of_empty_elements_is_refused_with_bounded_memory() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(ELEMENTS)], capture_output=True, text=True, cwd=ROOT, timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["codes"] == ["CDA_TOO_MANY_ELEMENTS"]
    assert result["peak"] < 400, result
    assert result["after"] < result["before"] + 20, result  # the memory is given back


def _hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
async def test_ten_19mib_cdas_at_once_stay_under_the_documented_ceiling(tmp_path: Path) -> None:
    http = free_port()
    token = "sender-token-123456"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(tmp_path / "data"), "--mllp-port",
         str(free_port()), "--http-port", str(http)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
        env={**os.environ, "RELAIS_GATEWAY_LOG_LEVEL": "warning", "RELAIS_API_TOKENS": f"operator:{token}"},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().decode().startswith("relais ready")
        body = bomb()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:

            async def post() -> tuple[int, dict]:
                async with session.post(
                    f"http://127.0.0.1:{http}/v1/documents", data=body, headers={"Content-Type": "application/xml"},
                    timeout=aiohttp.ClientTimeout(total=120),
                ) as resp:
                    return resp.status, await resp.json(content_type=None)

            results = await asyncio.gather(*(post() for _ in range(10)))
        for status, problem in results:
            assert status == 422, problem
            assert problem["errors"][0]["code"] == "CDA_TOO_MANY_ELEMENTS"
        peak = _hwm_mib(proc.pid)
        print(f"ten 19 MiB CDAs at once: serve peak RSS {peak:.0f} MiB")
        assert peak < 512, f"peak RSS {peak:.0f} MiB over the 512 MiB ceiling the README documents"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
