# SPDX-License-Identifier: GPL-3.0-or-later
#
# Copyright (C) the Dauys authors.
#
# This program is free software: you can redistribute it and/or modify it
# under the terms of the GNU General Public License as published by the Free
# Software Foundation, either version 3 of the License, or (at your option)
# any later version.  It is distributed WITHOUT ANY WARRANTY; see COPYING in
# this directory for the full license text.
"""piper_worker: Piper TTS (piper-tts, GPL-3.0) as a separate program.

Dauys (Apache-2.0) never imports piper; it starts ``python -m piper_worker``
and talks to it over stdin/stdout.  See README.md for why and for the protocol.
"""

PROTOCOL_VERSION = 1
