"""Not imported as a package: ``lockwatch run`` puts this folder on PYTHONPATH, where
Python finds its ``sitecustomize`` at start-up. A package only so that it ships with
lockwatch like the rest of its code."""
