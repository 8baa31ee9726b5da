"""Link to the display-controller firmware: framed, checksummed LED-zone protocol over UART/SPI/UDP.

Empty until the firmware_bridge issue lands (protocol, host link, C99 reference library, simulator).
"""
