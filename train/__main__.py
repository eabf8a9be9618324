from train.main import main

raise SystemExit(main())
