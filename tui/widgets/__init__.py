"""Widgets shared by the screens: the navigation bar, the filter input and the details pane."""
