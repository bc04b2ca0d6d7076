/* c-exit: returns at once (isa-debug-exit code 0 → status 1): the shortest possible C guest run. */
int main(void) { return 0; }
