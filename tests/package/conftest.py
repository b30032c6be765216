# SPDX-License-Identifier: Apache-2.0
# The package tests reuse the integration harness (ports, waits, certificates, processes).
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
