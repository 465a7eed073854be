from nodedb_server.cli import main

raise SystemExit(main())
