"""The `sengadm` terminal dashboard (Textual). Import `sengadm.tui.app` only where Textual is
wanted: nothing else in sengadm or sengd imports this package."""
