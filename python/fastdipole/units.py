"""Unit conversions. Positions are Angstrom, charges e, dipoles e*Angstrom internally."""

#: 1 e*Angstrom in Debye.
DEBYE_PER_E_ANGSTROM = 4.80320

def debye_to_e_angstrom(x):
    return x / DEBYE_PER_E_ANGSTROM

def e_angstrom_to_debye(x):
    return x * DEBYE_PER_E_ANGSTROM
