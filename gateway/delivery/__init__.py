"""Delivery: the durable work the journal holds, carried to the destinations.

The dispatcher claims due deliveries, hands them to the adapters, records each attempt and
decides what follows (retry, dead letter, business acknowledgement to the sender).
"""
