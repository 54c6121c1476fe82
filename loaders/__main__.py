from loaders.cli import main; raise SystemExit(main())
