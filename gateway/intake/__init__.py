"""Intake: what happens between a frame arriving and its ACK leaving.

The listeners hand raw bytes here; the bytes are analysed by the pure pipeline
(``gateway.core``), recorded in the journal with everything decided about them in one
transaction, and only then acknowledged.

* ``handler`` — the steps in order, for HL7 v2, CDA over HTTP, refused frames and replays;
* ``plan`` — what one exchange records (documents, deliveries, ADT effects, mail orders);
* ``acks`` — the connection ACK, the enhanced-mode application ACK, the refusal AR.
"""
