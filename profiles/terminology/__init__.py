"""DMP / CI-SIS terminology data (JSON), read with ``gateway.core.terminology.load``."""
