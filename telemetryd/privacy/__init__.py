"""The privacy policy: what each sink may see of a record's categorised data (docs/privacy.md)."""
