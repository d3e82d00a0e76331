"""The key service: the only holder of the key-encryption key, and so the only one that unwraps
data keys; services and agent jobs get data keys from it over NATS (docs/privacy.md)."""
