from crossdistill.cli import main

raise SystemExit(main())
