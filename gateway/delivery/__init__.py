"""Delivery: the durable work the journal holds, carried to the destinations.

* ``dispatcher`` — claims due deliveries, hands them to the adapters, records each attempt
  (retry or dead letter by :func:`gateway.core.retry.next_attempt`);
* ``zam`` — which business acknowledgement (ZAM^Z01) an outcome owes the sender, and to whom;
* ``mss_acks`` — the MSSanté receipts and read acknowledgements (ZAM^Z02 / Z03);
* ``holds`` — the sweeper: holds that waited too long, leases nobody renews.
"""
