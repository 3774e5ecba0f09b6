"""How much of a file sniffing reads: enough for a tar header and to walk a pickle's first
opcodes. A leaf module, for the package's sniffer and the readers that sniff again."""

SNIFF_BYTES = 512
