"""All test timing goes through here: scale with VOICE_TEST_TIME_FACTOR on slow machines."""

import os

FACTOR = float(os.environ.get("VOICE_TEST_TIME_FACTOR", "1"))
MS = FACTOR / 1000
"""One millisecond, scaled: ``await asyncio.sleep(50 * MS)``."""

SCALE = MS * 1000
"""Settings take milliseconds; multiply by this so they scale with the time factor too."""
