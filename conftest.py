"""Root conftest: import the workspace packages whose folder name equals their import
name (`specs`, `orchestratord`, `provisioners`) before any test module is collected.

With `--import-mode=importlib`, pytest names a test module after its path
(`orchestratord.tests.test_x`) and, for a parent it cannot find in `sys.modules`,
registers the folder itself as that parent, shadowing the installed package. Importing
the real packages first makes pytest reuse them.
"""

import orchestratord
import provisioners
import specs

__all__ = ["orchestratord", "provisioners", "specs"]
