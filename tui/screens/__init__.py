"""The TUI's screens: one per mode (Catalogue, Library, Transfers, Help) plus the modals."""
