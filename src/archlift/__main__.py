from archlift.cli import main

raise SystemExit(main())
