"""MediAI's services. Each is its own process; they talk only through events on NATS."""

# Service name -> "module:factory" of its Litestar app, for `mediai serve` and `mediai up`.
HTTP_SERVICES: dict[str, str] = {
    "token": "services.token.app:create_app",
}
