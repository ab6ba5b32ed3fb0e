"""Physical channel model between Alice's optical outputs and Bob's detector inputs.

See ``docs/channel.md``. Modules, one job each: :mod:`.source` (photon numbers),
:mod:`.fibre` (loss, delay, polarisation), :mod:`.freespace` (satellite pass),
:mod:`.detectors` (Bob's receiver), :mod:`.eve` (attacks), :mod:`.clock` (Bob's samples),
:mod:`.channel` (composition, ``propagate`` and ``render``), :mod:`.expectations` (analytic
statistics) and :mod:`.measure` (the same statistics measured from clicks).
"""
from .channel import Channel, Detections
from .clock import SampleClock
from .detectors import CAUSE_AFTERPULSE, CAUSE_DARK, CAUSE_PHOTON, Detectors
from .eve import BeamSplitting, InterceptResend, PhotonNumberSplitting
from .expectations import expected_statistics, pns_preserving_signal_gain, y1_lower_bound
from .fibre import Fibre, PolarisationDrift
from .freespace import SatellitePass
from .measure import measured_statistics
from .source import Source, random_codes

__all__ = ["Channel", "Detections", "SampleClock", "Detectors", "CAUSE_PHOTON", "CAUSE_DARK",
           "CAUSE_AFTERPULSE", "InterceptResend", "PhotonNumberSplitting", "BeamSplitting",
           "expected_statistics", "pns_preserving_signal_gain", "y1_lower_bound", "Fibre",
           "PolarisationDrift", "SatellitePass", "measured_statistics", "Source", "random_codes"]
