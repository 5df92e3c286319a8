from klviz.threads import apply_thread_settings

apply_thread_settings()  # before torch loads (klviz.cli does it too, for the `klviz` script)

from klviz.cli import main  # noqa: E402

raise SystemExit(main())
