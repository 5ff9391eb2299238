/* A stand-in for Windows' bcryptprimitives.dll, for running warren's .exe under Debian 12's
 * wine (8.0), which does not ship that DLL. Rust's standard library (1.78 and later) takes its
 * random bytes from ProcessPrng in it, so without this every Rust program exits at load time
 * (status c0000135). Windows 10 and later have the real DLL; this file is used by
 * tests/windows/smoke.sh only and never shipped. ProcessPrng here asks the same system RNG
 * through advapi32's RtlGenRandom (SystemFunction036). */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
    while (length > 0) {
        ULONG n = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, n)) {
            return FALSE;
        }
        data += n;
        length -= n;
    }
    return TRUE;
}
