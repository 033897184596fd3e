"""Slowly changing loads for the demo, so a live view shows movement."""

import math
import threading
import time

from .meters import AcMeter


class LoadVariation:
    """Every `interval` seconds, sets each meter's values from sine waves of `period`
    seconds (meters out of phase with each other); energy accumulates from the power."""

    def __init__(self, meters, period=120.0, interval=0.5):
        self.meters = meters
        self.period = period
        self.interval = interval
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        for meter in self.meters:
            meter.accumulate = True
        self._thread = threading.Thread(target=self._run, name='pzemsim-vary', daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self):
        start = time.monotonic()
        while not self._stop.wait(self.interval):
            self.step(time.monotonic() - start)

    def step(self, t):
        for i, meter in enumerate(self.meters):
            phase = 2 * math.pi * i / max(len(self.meters), 1)
            wave = math.sin(2 * math.pi * t / self.period + phase)
            if isinstance(meter, AcMeter):
                voltage = round(230.0 + 3.0 * math.sin(t / 23.0 + phase), 1)
                power = round(900.0 + 700.0 * wave, 1)
                power_factor = round(0.92 + 0.06 * math.sin(t / 31.0 + phase), 2)
                meter.set(voltage=voltage, power=power, power_factor=power_factor,
                          current=round(power / (voltage * power_factor), 3),
                          frequency=round(50.0 + 0.05 * math.sin(t / 7.0), 1))
            else:
                voltage = round(13.2 + 0.6 * wave, 2)
                power = round(max(0.0, 120.0 + 110.0 * wave), 1)
                meter.set(voltage=voltage, power=power, current=round(power / voltage, 2))
