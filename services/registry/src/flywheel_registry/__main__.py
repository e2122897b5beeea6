import sys

from .app import main, migrate_main

if sys.argv[1:2] == ["migrate"]:
    migrate_main()
elif sys.argv[1:]:
    sys.exit(f"usage: python -m flywheel_registry [migrate]   (unknown: {' '.join(sys.argv[1:])})")
else:
    main()
