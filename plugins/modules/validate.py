#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: validate
short_description: Check a list of rules and fail once, naming every rule that does not hold
version_added: 0.1.0
description:
  - The collection's one way to refuse bad input (a role's C(tasks/validate.yml), the site
    playbook) and to judge effective state (a role's C(tasks/verify.yml)). Each rule is a
    boolean O(checks[].ok) and the message O(checks[].msg) that says what was wrong, what is
    allowed and why. Every rule is evaluated; when any fails, the task fails once with all
    their messages, in order, so a user with two bad values learns of both in one run.
  - Runs on the controller only (an action plugin). It opens no connection, transfers no
    module and changes nothing, so it costs no round trip, works the same in check mode,
    and, placed first in a role, fails before anything on the host changes.
  - "How a role uses it: C(tasks/validate.yml) holds one task whose O(checks) list reads as the
    role's input rules, one C(ok)/C(msg) pair per rule; give each rule a O(checks[].name)
    (usually the variable it guards) so RV(failed_checks) says which failed. Values that
    several rules share go into the task's C(vars). Set O(note) to C(Nothing was changed.)
    where the task runs before any change. Converting an C(assert) over a list of
    C({ok, msg}) is mechanical: the list becomes O(checks) and the C(assert) goes."
  - A rule that cannot be read (no C(ok), an C(ok) that is not a boolean, a failing rule with
    an empty message, an unknown key) fails the task; a malformed rule never passes.
author:
  - unbroken.training contributors (@unbroken-training)
options:
  checks:
    description:
      - The rules, each a mapping. Write C(ok) as a template that yields a boolean, e.g.
        C("{{ my_port | int >= 1024 }}").
      - The messages of passing rules are rendered too, so they must render for any input
        (use C(default) on values that may be missing).
    type: list
    elements: dict
    required: true
    suboptions:
      ok:
        description: Whether the rule holds. Booleans only (C(true)/C(false) text is accepted).
        type: bool
        required: true
      msg:
        description:
          - What is wrong and what is allowed, shown when O(checks[].ok) is false.
          - Runs of white space (from folded YAML) are collapsed to one space.
        type: str
        required: true
      name:
        description: A short label (e.g. the variable the rule guards), for RV(failed_checks).
        type: str
  note:
    description: A sentence after the messages when any rule fails, e.g. C(Nothing was changed.)
    type: str
attributes:
  action:
    description: Runs on the controller; nothing is executed on the target.
    support: full
  check_mode:
    description: Changes nothing, so check mode gives the same result.
    support: full
  diff_mode:
    description: Changes nothing, so there is nothing to diff.
    support: none
  platform:
    description: Runs on the controller for any target.
    support: full
    platforms: all
notes:
  - Compared with M(ansible.builtin.assert), which stops at the first false condition, every
    rule is evaluated and every failing message is reported.
"""

EXAMPLES = r"""
# roles/<role>/tasks/validate.yml
- name: Refuse a bad port range or locale before anything changes
  unbroken.training.validate:
    note: Nothing was changed.
    checks:
      - name: myrole_port_range
        ok: >-
          {{ myrole_port_start | int >= 1024
             and myrole_port_start | int <= myrole_port_end | int }}
        msg: >-
          myrole_port_start/_end is {{ myrole_port_start }}-{{ myrole_port_end }}: both must
          lie within 1024-65535 and the start must not be greater than the end.
      - name: myrole_locale
        ok: "{{ myrole_locale is match('^[A-Za-z_]+\\.UTF-8$') }}"
        msg: myrole_locale '{{ myrole_locale }}' is not a UTF-8 locale such as en_US.UTF-8.

# roles/<role>/tasks/verify.yml: judge what a read-only module reported
- name: Fail unless the service answers on its port
  unbroken.training.validate:
    checks:
      - ok: "{{ probe.rc == 0 }}"
        msg: "myservice did not answer (exit {{ probe.rc }}): {{ probe.stderr | default('') }}"
"""

RETURN = r"""
msg:
  description: Every failing rule's message joined by spaces, then O(note); else a count.
  returned: always
  type: str
  sample: "session_tools_tmux_history_limit is 0: it must be at least 1. Nothing was changed."
errors:
  description: The message of each failing rule, in the order of O(checks).
  returned: always
  type: list
  elements: str
  sample: ["session_tools_tmux_history_limit is 0: it must be at least 1."]
failed_checks:
  description: The O(checks[].name) of each failing rule (C(check N) for a rule without a name).
  returned: always
  type: list
  elements: str
  sample: [session_tools_tmux_history_limit]
"""
