"""A scipy Cholesky factorisation (the example's test 4)."""

import numpy
import scipy.linalg

m = numpy.array([[4.0, 2.0], [2.0, 3.0]])
print("cholesky:", scipy.linalg.cholesky(m))
