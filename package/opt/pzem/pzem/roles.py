"""Roles a PZEM meter can take on the Venus D-Bus, as data.

A role is the D-Bus service type (com.victronenergy.<role>.*). AC roles suit the PZEM-016 family,
DC roles the PZEM-017 family. Sources: reference/venus-dbus.md 2.3 and 2.4.
"""

AC_ROLES = ('grid', 'genset', 'acload', 'pvinverter', 'evcharger', 'heatpump')
DC_ROLES = ('dcsource', 'dcload', 'dcsystem')
ROLES = AC_ROLES + DC_ROLES

FAMILY_ROLES = {'ac': AC_ROLES, 'dc': DC_ROLES}
# A meter nobody configured gets a role that steers nothing: never grid, which systemcalc and
# ESS would act on (reference/venus-dbus.md 9.1).
DEFAULT_ROLE = {'ac': 'acload', 'dc': 'dcsource'}

# Roles whose meter only ever sees consumption: their reverse (export) energy is 0, a number, as
# Victron's own meters publish it (gui-v2's em-acload mock: /Ac/Energy/Reverse 0), not invalid.
NO_EXPORT = ('acload', 'evcharger', 'heatpump')

# The original PZEM driver's names: role plus a fixed pvinverter position.
ALIASES = {'inverter0': ('pvinverter', 0), 'inverter': ('pvinverter', 1)}

# /Position: pvinverter 0 AC-in 1, 1 AC-out, 2 AC-in 2; acload, evcharger and heatpump (gui-v2's
# AcPosition) 0 AC-out, 1 AC-in.
POSITIONS = {'pvinverter': (0, 1, 2), 'acload': (0, 1), 'evcharger': (0, 1), 'heatpump': (0, 1)}
DEFAULT_POSITION = {'pvinverter': 0, 'acload': 0, 'evcharger': 0, 'heatpump': 0}

# /Settings/MonitorMode refines dcsource and dcload services in the GUI.
MONITOR_MODES = {
    'dcsource': {'generic': -1, 'accharger': -2, 'dcdc': -3, 'watergenerator': -4,
                 'shaftgenerator': -7, 'wind': -8},
    'dcload': {'generic': 1, 'fridge': 3, 'waterpump': 4, 'bilgepump': 5, 'inverter': 7,
               'waterheater': 8},
}
DEFAULT_MONITOR_MODE = {'dcsource': -1, 'dcload': 1}


def is_generic_meter(role):
    """/IsGenericEnergyMeter = 1, as Victron's energy meters publish it for every AC role but
    grid."""
    return role in AC_ROLES and role != 'grid'


def family_of(role):
    """'ac' or 'dc' for a canonical role name."""
    return 'ac' if role in AC_ROLES else 'dc'


def resolve(name):
    """Canonical (role, position or None) for a role name or an old alias; KeyError if unknown."""
    name = name.strip().lower()
    if name in ALIASES:
        return ALIASES[name]
    if name in ROLES:
        return name, None
    raise KeyError(name)
