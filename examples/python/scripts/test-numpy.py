"""A numpy dot product (the example's test 3)."""

import numpy

a = numpy.arange(1000000, dtype=float)
print("dot:", a.dot(a))
