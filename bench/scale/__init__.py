"""`make scale`: the service on distributed parts (issue 15). See bench/scale/run.py and the README."""
