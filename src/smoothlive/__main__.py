from smoothlive.cli import main

raise SystemExit(main())
