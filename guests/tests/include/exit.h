/* isa-debug-exit: the VMM exits with status (code << 1) | 1. Works in any mode (imm8 port). */
#define EXIT(code) movb $(code), %al; outb %al, $DEBUG_EXIT; cli; 9: hlt; jmp 9b
