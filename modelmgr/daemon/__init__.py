"""The sync daemon: keep a models root (often a volume shared by several machines) holding the
wanted bundles. ``config`` (YAML), ``reconcile`` (one cycle), ``loop`` (signals, interval,
systemd), ``volume_lock`` (lease locks that work on network volumes), ``notify`` (sd_notify),
``cycles`` (records for ``status``), ``events`` (log lines), ``metrics`` (Prometheus)."""
