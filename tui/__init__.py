"""modelmgr's terminal UI (Textual), installed as the import package ``modelmgr_tui``.

It is an optional front end: ``modelmgr tui`` imports it lazily and says which extra to install
when Textual is missing, so the core never imports Textual. Like every front end it only talks to
:class:`modelmgr.service.ModelManager`, from Textual workers, and never does IO on the UI thread.

Modules: ``app`` (the App: modes, global keys, actions, error modals), ``pulls`` (pull jobs kept by
the App so that leaving a screen never loses one, and the sampled transfer rows), ``calls``
(running service calls off the UI thread), ``format`` (the text of the detail panes and modals),
``screens/`` and ``widgets/``.
"""
