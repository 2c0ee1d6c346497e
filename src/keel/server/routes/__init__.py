"""The platform API's routers, one module per concern (see ``keel.server.app.ROUTERS``)."""
