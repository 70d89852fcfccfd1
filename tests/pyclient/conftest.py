"""Settings for the pyclient tests, on CPython and inside Pyodide alike."""

from hypothesis import HealthCheck, settings

# Speed is measured by `make bench`, never by tests: a loaded CI machine, or Pyodide under Node (several
# times slower than CPython), must not fail a property test because examples were generated slowly.
settings.register_profile("omnicare", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("omnicare")
