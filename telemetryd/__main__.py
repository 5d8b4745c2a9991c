from telemetryd.cli import main

raise SystemExit(main())
