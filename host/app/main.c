/* Placeholder until the host is wired (replaced by the engine owner). */
int main(void) { return 2; }
