/*
** venus-pzem: one meter (one Modbus address) on an adapter: what it is, how it answers, and the
** requests for it (a new address, a reset of its energy counter). Its readings come from the
** meter's own service; the rest from the port's.
*/

import QtQuick
import Victron.VenusOS

Page {
	id: root

	property string portUid
	property int address
	readonly property string meterUid: portUid + "/Meters/" + address
	readonly property bool answering: stateItem.value === 0
	readonly property bool exportUnknown: !readings.energyReverse.valid && signItem.value === ""
			&& ["grid", "genset", "pvinverter"].indexOf(roleItem.value) >= 0

	title: nameItem.value
			? nameItem.value
			//% "Meter at address %1"
			: qsTrId("pzem_meters_meter_title").arg(address)

	PzemMeters_Words { id: words }

	VeQuickItem { id: stateItem; uid: root.meterUid + "/State" }
	VeQuickItem { id: reasonItem; uid: root.meterUid + "/Reason" }
	VeQuickItem { id: modelItem; uid: root.meterUid + "/Model" }
	VeQuickItem { id: roleItem; uid: root.meterUid + "/Role" }
	VeQuickItem { id: nameItem; uid: root.meterUid + "/Name" }
	VeQuickItem { id: groupItem; uid: root.meterUid + "/Group" }
	VeQuickItem { id: phaseItem; uid: root.meterUid + "/Phase" }
	VeQuickItem { id: serviceItem; uid: root.meterUid + "/Service" }
	VeQuickItem { id: signItem; uid: root.meterUid + "/Sign" }
	VeQuickItem { id: foundItem; uid: root.meterUid + "/Found" }
	VeQuickItem { id: instanceItem; uid: root.meterUid + "/DeviceInstance" }
	VeQuickItem { id: noReplyItem; uid: root.meterUid + "/Errors/NoReply" }
	VeQuickItem { id: badFrameItem; uid: root.meterUid + "/Errors/BadFrame" }
	VeQuickItem { id: exceptionItem; uid: root.meterUid + "/Errors/Exception" }
	VeQuickItem { id: implausibleItem; uid: root.meterUid + "/Errors/Implausible" }
	VeQuickItem { id: setAddressItem; uid: root.meterUid + "/SetAddress" }
	VeQuickItem { id: resetItem; uid: root.meterUid + "/ResetEnergy" }
	VeQuickItem { id: busyItem; uid: root.portUid + "/Action/State" }

	PzemMeters_Confirmer { id: confirmer }

	PzemMeters_Readings {
		id: readings
		service: serviceItem.value || ""
		instance: instanceItem.value
		phase: phaseItem.value || ""
		role: roleItem.value || ""
	}

	GradientListView {
		model: VisibleItemModel {
			PrimaryListLabel {
				preferredVisible: !stateItem.valid
				//% "No meter is listed at this address any more."
				text: qsTrId("pzem_meters_meter_gone")
			}

			PzemMeters_RequestStatus {
				portUid: root.portUid
				address: root.address
			}

			ListText {
				//% "Status"
				text: qsTrId("pzem_meters_status")
				secondaryText: words.meterState(stateItem.value, reasonItem.value || "")
				caption: stateItem.value === 2
						//% "The driver asks it again every few seconds, and publishes it once it answers. Check its power (a PZEM-016 needs its mains, a PZEM-017 5 V from the adapter), its address and the A/B wiring."
						? qsTrId("pzem_meters_waiting_help") : ""
				preferredVisible: stateItem.valid
			}

			ListText {
				//% "Meter"
				text: qsTrId("pzem_meters_model")
				secondaryText: modelItem.value
						? (foundItem.value === 1
						   //% "%1, found by the search"
						   ? qsTrId("pzem_meters_model_found").arg(modelItem.value) : modelItem.value)
						//% "Not known until it answers"
						: qsTrId("pzem_meters_model_unknown")
				preferredVisible: stateItem.valid
			}

			ListText {
				//% "Role"
				text: qsTrId("pzem_meters_role")
				secondaryText: groupItem.value
						//% "%1, phase %2 of group %3"
						? qsTrId("pzem_meters_role_group").arg(roleItem.value).arg(phaseItem.value)
								.arg(groupItem.value)
						: roleItem.value || ""
				preferredVisible: stateItem.valid
			}

			ListText {
				//% "D-Bus service"
				text: qsTrId("pzem_meters_service")
				secondaryText: serviceItem.value || ""
				preferredVisible: !!serviceItem.value
			}

			ListText {
				//% "Voltage, current, power"
				text: qsTrId("pzem_meters_readings")
				secondaryText: words.number(readings.voltage.value, 1, "V") + "   "
						+ words.number(readings.current.value, readings.dc ? 2 : 3, "A") + "   "
						+ words.number(readings.power.value, 1, "W")
				preferredVisible: root.answering
			}

			ListText {
				text: !readings.dc
						//% "Energy imported"
						? qsTrId("pzem_meters_energy")
						: readings.role === "dcsource"
						//% "Energy produced"
						? qsTrId("pzem_meters_energy_out")
						//% "Energy used"
						: qsTrId("pzem_meters_energy_in")
				secondaryText: words.number(readings.energy.value, 3, "kWh")
				preferredVisible: readings.energy.valid
			}

			ListText {
				//% "Energy exported"
				text: qsTrId("pzem_meters_energy_reverse")
				secondaryText: readings.energyReverse.valid
						? words.number(readings.energyReverse.value, 3, "kWh")
						//% "Not measured"
						: qsTrId("pzem_meters_not_measured")
				caption: root.exportUnknown
						//% "A PZEM cannot tell import from export. With 'sign = vebus' in the meter map, a meter right at the Multi's AC input takes the direction from the Multi; without it, export is left empty rather than guessed."
						? qsTrId("pzem_meters_export_unknown") : ""
				preferredVisible: !!readings.uid && !readings.dc
			}

			ListText {
				//% "Errors"
				text: qsTrId("pzem_meters_errors_title")
				secondaryText: words.errors(noReplyItem.value, badFrameItem.value,
						exceptionItem.value, implausibleItem.value)
				preferredVisible: stateItem.valid && stateItem.value !== 2
			}

			ListSpinBox {
				id: newAddress
				//% "Give it a new address"
				text: qsTrId("pzem_meters_set_address")
				from: 1
				to: 247
				value: root.address
				preferredVisible: root.answering
				interactive: busyItem.value !== 1
				onSelectorAccepted: function(newValue) {
					// the picker shows the meter's address until the meter answers at another
					newAddress.value = Qt.binding(function() { return root.address })
					confirmer.ask({
						//% "Give the meter at address %1 the address %2?"
						"title": qsTrId("pzem_meters_set_address_confirm").arg(root.address).arg(newValue),
						//% "The meter is written between polls and checked at its new address; the map follows it. The page then shows it at its new address."
						"description": qsTrId("pzem_meters_set_address_confirm_text"),
						"confirmedAction": function() { setAddressItem.setValue(newValue) }
					})
				}
			}

			ListButton {
				//% "Reset its energy counter"
				text: qsTrId("pzem_meters_reset_energy")
				//% "Reset"
				secondaryText: qsTrId("pzem_meters_reset_button")
				preferredVisible: root.answering
				interactive: busyItem.value !== 1
				onClicked: confirmer.ask({
					//% "Reset the meter's energy counter?"
					"title": qsTrId("pzem_meters_reset_confirm"),
					//% "The meter's own counter goes back to 0. The energy totals on this GX and in VRM keep counting up from where they are."
					"description": qsTrId("pzem_meters_reset_confirm_text"),
					"confirmedAction": function() { resetItem.setValue(1) }
				})
			}
		}
	}
}
