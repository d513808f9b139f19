"""Reading, validating, splitting and generating interaction logs (import the modules: the
service reads ``data.timestamps`` without loading every reader)."""
