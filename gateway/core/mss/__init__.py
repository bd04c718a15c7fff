"""MSSanté: pure rules for secure health messaging (mail orders, DSN/MDN reports, ZAM^Z02/Z03)."""
