from headless.cli import main

raise SystemExit(main())
