# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Attributes shared by the collection's modules, written once."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
"""

    # A module that only reads: check mode returns the same result, there is nothing to diff.
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    description: Reads only, so check mode returns the same result.
    support: full
  diff_mode:
    description: Nothing changes, so there is nothing to diff.
    support: none
"""
