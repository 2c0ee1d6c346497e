"""The UI's pages, one module per section (listed in :data:`keel.server.ui.PAGES`)."""
