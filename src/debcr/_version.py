"""The package version and distribution name, in a module of their own so nothing imports the
package root for them.

The import name is ``debcr`` (the paper's API); the distribution is ``debcr-torch`` because the
name ``debcr`` on the package index belongs to the original TensorFlow package.
"""

__version__ = "0.1.0"
DISTRIBUTION = "debcr-torch"
