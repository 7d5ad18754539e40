"""Regenerate README.md's "Configuration" section from distiller.config.DistillConfig.

python scripts/config_docs.py           # rewrite the section
python scripts/config_docs.py --check   # exit 1 when README.md and the model disagree (CI)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distiller.config_docs import update_readme

if __name__ == "__main__":
    readme = Path(__file__).resolve().parents[1] / "README.md"
    if "--check" in sys.argv[1:]:
        if not update_readme(readme, check=True):
            print("README.md's Configuration section is out of date: python scripts/config_docs.py")
            sys.exit(1)
        print("README.md's Configuration section matches distiller/config.py")
    else:
        update_readme(readme)
        print(f"wrote the Configuration section of {readme}")
