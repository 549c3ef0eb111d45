from amtprep.cli import main

raise SystemExit(main())
