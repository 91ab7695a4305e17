"""numpy and a pure-Python package from the app's venv."""

import greet
import numpy

a = numpy.arange(1000, dtype=float)
print(greet.hello("enclave"), "dot:", a.dot(a))
