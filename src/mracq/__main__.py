from mracq.cli import main

raise SystemExit(main())
