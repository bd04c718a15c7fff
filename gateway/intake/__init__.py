"""Intake: what happens between a frame arriving and its ACK leaving.

The listeners hand raw bytes here; the bytes are analysed by the pure pipeline
(``gateway.core``), recorded in the journal with everything decided about them in one
transaction, and only then acknowledged.
"""
