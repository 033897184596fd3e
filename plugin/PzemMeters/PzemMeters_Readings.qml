/*
** venus-pzem: one meter's live readings, read from the meter's own service (the port's service
** names it: /Meters/<address>/Service and /DeviceInstance). The port's service carries no
** readings, so that a poll costs it nothing.
**
**     PzemMeters_Readings { id: readings; service: ...; instance: ...; phase: ...; role: ... }
**     readings.power.value
*/

import QtQuick
import Victron.VenusOS

QtObject {
	id: root

	property string service         // com.victronenergy.grid.pzem_ttyUSB0_1, or "" (not published)
	property var instance           // its /DeviceInstance: on MQTT the service is <type>/<instance>
	property string phase           // L1..L3 for a member of a phase group, else ""
	property string role

	readonly property bool dc: ["dcsource", "dcload", "dcsystem"].indexOf(role) >= 0
	readonly property string uid: service && instance !== undefined && instance !== null
			? BackendConnection.serviceUidFromName(service, instance) : ""
	readonly property string base: !uid ? "" : dc ? uid + "/Dc/0/" : uid + "/Ac/" + (phase || "L1") + "/"

	property VeQuickItem voltage: VeQuickItem { uid: root.base ? root.base + "Voltage" : "" }
	property VeQuickItem current: VeQuickItem { uid: root.base ? root.base + "Current" : "" }
	property VeQuickItem power: VeQuickItem { uid: root.base ? root.base + "Power" : "" }
	// energy in: AC import, or what a DC load used; energy out: AC export, or what a DC source gave
	property VeQuickItem energy: VeQuickItem {
		uid: !root.uid ? ""
			: !root.dc ? root.base + "Energy/Forward"
			: root.role === "dcsource" ? root.uid + "/History/EnergyOut"
			: root.uid + "/History/EnergyIn"
	}
	property VeQuickItem energyReverse: VeQuickItem {
		uid: root.uid && !root.dc ? root.base + "Energy/Reverse" : ""
	}
}
