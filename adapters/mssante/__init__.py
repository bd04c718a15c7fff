"""MSSanté (secure health messaging): SMTP/IMAP client, IHE XDM packaging, report poller, simulator."""
