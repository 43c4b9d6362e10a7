"""Instrument emulators: servers on loopback that speak each instrument's real protocol.

A layer beside :mod:`mracq.devices` (they never import each other): an emulator knows the
protocol from the server side and the physics of :mod:`mracq.sim`, nothing about devices,
transports or plans. One ``mracq emulate nv`` process hosts

- :mod:`~mracq.emulators.scpi_microwave`: an R&S SGS100A/SMB100A or Keysight N51x1
  microwave source, SCPI over raw TCP (port 5025 on the real instrument; any free port here);
- :mod:`~mracq.emulators.pulse_streamer`: a Swabian Pulse Streamer 8/2, JSON-RPC 2.0 over
  HTTP on port 8050 and the binary upload on TCP 21328 (fixed ports: one emulator per
  loopback address; 127.0.0.2, 127.0.0.3, ... are loopback too);
- :mod:`~mracq.emulators.nidaqmx_counter`: an NI X-series counter card behind NI's gRPC
  Device Server (the ``nidaqmx_grpc.NiDAQmx`` service);
- :mod:`~mracq.emulators.control`: a JSON-lines control port to inject faults;

around one :class:`~mracq.emulators.nv_model.EmulatedNV`, so the photon counts depend on
the sequence streamed and on the microwave frequency, power, output and IQ state set.
Nothing listens beyond 127.0.0.1 unless asked.
"""
