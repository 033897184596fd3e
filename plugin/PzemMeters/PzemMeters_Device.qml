/*
** venus-pzem: the entry on a meter's own device page (Settings -> Device list -> the meter).
** gui-v2 offers it on every device with ProductId 0xFFFF, which other drivers use too: on a
** device that dbus-pzem does not publish it shows nothing but that.
*/

import QtQuick
import Victron.VenusOS

DeviceListPluginPage {
	id: root

	readonly property string serviceUid: root.device ? root.device.serviceUid : ""
	readonly property bool ours: processItem.value === "dbus-pzem" && portIdentItem.valid
	// the meter's port service: com.victronenergy.pzem.<port> on D-Bus, pzem/<port> on MQTT
	readonly property string portUid: !ours ? ""
			: BackendConnection.type === BackendConnection.MqttSource
			  ? "mqtt/pzem/" + portIdentItem.value
			  : BackendConnection.uidPrefix() + "/com.victronenergy.pzem." + portIdentItem.value

	//% "PZEM bus details"
	title: qsTrId("pzem_meters_device_title")

	PzemMeters_Words { id: words }

	VeQuickItem { id: processItem; uid: root.serviceUid + "/Mgmt/ProcessName" }
	VeQuickItem { id: portIdentItem; uid: root.serviceUid + "/Pzem/Port" }
	VeQuickItem { id: serialItem; uid: root.serviceUid + "/Serial" }
	VeQuickItem { id: connectionItem; uid: root.serviceUid + "/Mgmt/Connection" }

	GradientListView {
		header: SettingsColumn {
			width: parent ? parent.width : 0

			PrimaryListLabel {
				preferredVisible: !root.ours
				//% "This device is not published by the PZEM driver."
				text: qsTrId("pzem_meters_not_ours")
			}

			ListText {
				//% "Connection"
				text: qsTrId("pzem_meters_connection")
				secondaryText: connectionItem.value || ""
				preferredVisible: root.ours
			}

			PzemMeters_RequestStatus {
				portUid: root.portUid
			}
		}

		model: root.ours ? meters : null

		delegate: ListNavigation {
			id: entry

			readonly property string meterUid: model.item.itemParent().uid
			readonly property int address: parseInt(meterUid.substring(meterUid.lastIndexOf("/") + 1))

			//% "Meter at address %1"
			text: qsTrId("pzem_meters_meter_title").arg(address)
			secondaryText: stateItem.valid ? words.meterState(stateItem.value, reasonItem.value || "") : ""
			// a phase group lists each of its meters; other meters of the port are left out
			preferredVisible: model.item.value === serialItem.value
			onClicked: Global.pageManager.pushPage("qrc:/PzemMeters/PzemMeters_Meter.qml",
					{ "portUid": root.portUid, "address": address })

			VeQuickItem { id: stateItem; uid: entry.meterUid + "/State" }
			VeQuickItem { id: reasonItem; uid: entry.meterUid + "/Reason" }
		}
	}

	VeQItemSortTableModel {
		id: meters
		dynamicSortFilter: true
		filterFlags: VeQItemSortTableModel.FilterInvalid
		model: VeQItemChildModel {
			childId: "Serial"
			model: VeQItemTableModel {
				uids: root.portUid ? [ root.portUid + "/Meters" ] : []
				flags: VeQItemTableModel.AddChildren | VeQItemTableModel.AddNonLeaves
						| VeQItemTableModel.DontAddItem
			}
		}
	}
}
